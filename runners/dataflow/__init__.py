"""Submission of the market pipeline to Google Cloud Dataflow."""
