"""Server-rendered pages: one module per area. Thin: data from ``streams``, JSON shapes from
``dashboard.serializers``, access from the models' querysets.
"""
