"""Packaging, so the project's modules install into Beam workers.

Dataflow stages the project with `--setup_file=./setup.py`; the Flink runner's
Python workers (EXTERNAL environment) install it the same way.
"""
import setuptools

setuptools.setup(
    name="market-data-pipeline",
    version="0.1.0",
    description="Real-time market data: Kafka ticks -> Beam 1-minute bars and anomalies -> REST/WebSocket",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["market", "market.*", "transforms", "transforms.*",
                                               "pipelines", "pipelines.*", "producer", "producer.*",
                                               "serving", "serving.*", "runners", "runners.*"]),
    include_package_data=True,
    package_data={"serving": ["static/*", "static/**/*", "templates/*"],
                  "producer": ["data/*.csv"],
                  "runners": ["local/maven/*/pom.xml"]},
    # Workers already have apache-beam; these are what the transforms import.
    install_requires=["orjson>=3.10"],
)
