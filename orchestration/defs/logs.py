"""The Dagster console logger for shopsync's runs: redacted JSON lines on stderr.

Registered as every job's ``console`` logger, so a run worker's stderr (which Dagster keeps
as compute logs, and which a container platform ships) carries one JSON object per line with
the store (the run's partition), the run id and the step. The same records still reach the
event log the UI shows; redaction is installed process-wide before any of them is made.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import dagster as dg

from pipelines.logs import JsonFormatter, install_redaction


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="Redacted JSON lines on stderr carrying shop, run_id and step.",
)
def shopsync_json_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    install_redaction()
    level = str(init_context.logger_config["log_level"]).upper()
    logger = logging.Logger("shopsync.run", level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return logger


LOGGERS: dict[str, dg.LoggerDefinition] = {"console": shopsync_json_logger}


def with_run_logging(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job's default run config with its ``console`` logger named.

    Dagster only builds a job's own loggers when the run config mentions them; without this
    a run falls back to its coloured text console. Launchers may still pass ``ops`` config:
    Dagster fills the rest from these defaults.
    """
    return {**(config or {}), "loggers": {"console": {"config": {"log_level": "INFO"}}}}
