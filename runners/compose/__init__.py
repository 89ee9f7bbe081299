"""Submitting the market pipeline inside the docker-compose stack (docker-compose.yml).

`python -m runners.compose` is the compose stack's pipeline submitter; see
`runners.compose.submit` for why it is not `python -m pipelines.market`.
"""
