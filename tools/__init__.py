"""Thin absl-flag command-line scripts: each parses flags and calls one tfod function."""
