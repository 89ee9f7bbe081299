"""JSON error bodies everywhere (DESIGN.md §7): {"error": {"code", "message"}}."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

# Machine words for the status codes serving returns.
CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 503: "not_ready",
         500: "internal_error"}


class ApiError(HTTPException):
    """An HTTP error with a machine-readable code, e.g. ApiError(400, "bad_limit", "...")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code


def error_response(status: int, code: str, message: str) -> Response:
    """The JSON error body with its status."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    """Turn every HTTP error, and any unhandled exception, into a JSON body."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = getattr(exc, "error_code", None) or CODES.get(status, exc.name.lower().replace(" ", "_"))
        response = error_response(status, code, exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return http_error(exc)
        log.exception("unhandled error")
        return error_response(500, "internal_error", InternalServerError.description)
