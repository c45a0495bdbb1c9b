"""Helpers the tests share (plain functions and classes, no fixtures): servers, factories, upstreams."""
