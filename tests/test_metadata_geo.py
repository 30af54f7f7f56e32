"""Places: haversine distances against hand-computed values, and ``--near LAT,LON,KM`` as a row mask."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imgsim.metadata.fields import MetadataError
from imgsim.metadata.filters import parse_where
from imgsim.metadata.geo import EARTH_RADIUS_KM, Near, haversine_km, near, parse_near
from imgsim.metadata.table import MetadataTable

R = EARTH_RADIUS_KM
EIFFEL, LOUVRE, LONDON = (48.8584, 2.2945), (48.8606, 2.3376), (51.5074, -0.1278)


@pytest.mark.parametrize("a, b, km", [
    ((0, 0), (0, 1), R * math.pi / 180),  # one degree along the equator: 111.195 km
    ((0, 0), (1, 0), R * math.pi / 180),  # one degree along a meridian
    ((0, 0), (90, 0), R * math.pi / 2),  # equator to pole: 10,007.56 km
    ((0, 0), (0, 180), R * math.pi),  # antipodes: 20,015.11 km
    ((60, 0), (60, 1), 2 * R * math.asin(math.cos(math.radians(60)) * math.sin(math.radians(0.5)))),  # 55.6 km
    ((0, 179.5), (0, -179.5), R * math.pi / 180),  # across the antimeridian
    ((48.8566, 2.3522), LONDON, 343.5565),  # Paris - London, worked out by hand with R = 6371.0088
])
def test_haversine_matches_hand_computed_distances(a, b, km):
    assert float(haversine_km(*a, *b)) == pytest.approx(km, rel=1e-6)


def photos() -> MetadataTable:
    return MetadataTable.from_rows([
        {"name": "eiffel", "lat": EIFFEL[0], "lon": EIFFEL[1]},
        {"name": "louvre", "lat": LOUVRE[0], "lon": LOUVRE[1]},  # 3.16 km from the Eiffel Tower
        {"name": "london", "lat": LONDON[0], "lon": LONDON[1]},
        {"name": "no gps"},
    ])


def test_near_keeps_the_photos_within_the_radius():
    table = photos()
    d = Near(*EIFFEL, 1).distances(table)
    assert d[:3] == pytest.approx([0.0, 3.1625, 341.2910], abs=1e-3)  # by hand with R = 6371.0088
    assert np.isnan(d[3])
    assert near(*EIFFEL, 3.1).mask(table).tolist() == [True, False, False, False]
    assert near(*EIFFEL, 3.2).mask(table).tolist() == [True, True, False, False]
    assert near(*EIFFEL, 400).mask(table).tolist() == [True, True, True, False]  # no position: never near


def test_near_combines_with_where_clauses():
    flt = parse_where(["name != eiffel"], near="48.8584,2.2945,5")
    assert flt.mask(photos()).tolist() == [False, True, False, False]
    assert flt.near.text == "48.8584,2.2945,5"


@pytest.mark.parametrize("text, message", [
    ("48.8,2.3", r"^--near takes LAT,LON,KM, not '48\.8,2\.3' \(e\.g\. --near 48\.8584,2\.2945,5"),
    ("north,2,5", r"^--near takes LAT,LON,KM, not 'north,2,5'"),
    ("91,0,5", r"^--near: latitude 91 is outside -90\.\.90"),
    ("0,181,5", r"^--near: longitude 181 is outside -180\.\.180"),
    ("0,0,0", r"^--near: the radius must be above 0 km, not 0"),
    ("nan,0,5", r"^--near takes three numbers LAT,LON,KM"),
    ("0,0,inf", r"^--near takes three numbers LAT,LON,KM"),
    ("1," * 200, r"^--near takes LAT,LON,KM"),
])
def test_bad_near_values_are_refused(text, message):
    with pytest.raises(MetadataError, match=message):
        parse_near(text)


def test_a_radius_beyond_half_the_earth_is_clamped():
    assert parse_near("0,0,50000").km == pytest.approx(math.pi * R)
