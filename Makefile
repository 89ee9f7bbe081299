# The two commands of the README: `make run` and `make test`.
.PHONY: run test test-fast stop setup

run:
	./scripts/run.sh

test:
	./scripts/test.sh $(ARGS)

# Unit and integration tests without the slow end-to-end ones.
test-fast:
	./scripts/test.sh -m "not e2e" $(ARGS)

stop:
	./scripts/stop.sh

setup:
	./scripts/setup.sh
