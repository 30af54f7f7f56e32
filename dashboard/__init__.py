"""The imgsim dashboard's Streamlit code: the only package (with app.py, its frame) that imports streamlit.

``views/`` has one module per tab, each with one ``render(...)``; ``state`` names the session and URL keys and
holds the query state machine; ``cached`` is every ``st.cache_*`` wrapper; ``components/`` the map, the result
cards, thumbnails, the gallery and the more-like-these picker. Behaviour lives in ``imgsim``.
"""
