"""The catalog group: a drop's images, their CLIP embeddings and its rows in Milvus."""
