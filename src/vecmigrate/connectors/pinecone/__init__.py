"""Pinecone (``pinecone://INDEX?namespace=N``), through the pinecone SDK's vectors API."""
