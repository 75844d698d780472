"""A drop from a store's export: exports.py reads Shopify product CSVs and Merchant Center feeds, fetch.py
fetches a picture by URL within the limits a store's export must keep to, importer.py makes the drop."""
