"""What is known about each image besides its pixels: metadata read from the file and from a sidecar.

- ``fields``: the built-in field names and the kinds of value (text, int, float, date, list);
- ``read``: one file's metadata from its header (EXIF, GPS, XMP, IPTC), never failing an image;
- ``sidecar``: a user's CSV or JSON Lines file keyed by ``path``, with inferred column types;
- ``table``: the columnar per-image table aligned with the index's rows, stored as Parquet;
- ``filters`` and ``geo``: the ``FIELD OP VALUE`` grammar and ``--near LAT,LON,KM``, applied as a row mask;
- ``keywords`` and ``fusion``: BM25 over the metadata text, fused with vector rankings by reciprocal rank.
"""
