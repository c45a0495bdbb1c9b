"""The recording gateway: an application's OpenAI-compatible requests, forwarded and recorded.

An app points its SDK at ``/gateway/<provider>/v1`` with a Streamscope API token as its key. Each
request goes on to the provider unchanged; the answer comes back byte for byte, each chunk as it
arrives, while a copy is decoded and recorded as a run (``source: "gateway"``) exactly like a run
Streamscope starts itself. ``proxy`` forwards; ``recorder`` records without ever getting in the
client's way. See docs/gateway.md.
"""
