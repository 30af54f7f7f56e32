"""Pieces several views draw: the map, result cards, thumbnail rows, the gallery, the more-like-these picker."""
