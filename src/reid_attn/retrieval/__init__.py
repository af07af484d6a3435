"""Retrieval over a user's own images: nearest gallery images (exact or faiss), the
incrementally updated gallery index and the results page. Import the modules themselves."""
