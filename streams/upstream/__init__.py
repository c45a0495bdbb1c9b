"""Talking to upstreams: the configured providers, the streaming HTTP client, and the network
backend it reads with. Nothing here stores or publishes; it hands bytes and frames upward.
"""
