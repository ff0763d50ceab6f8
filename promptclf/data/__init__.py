"""Tables in and out.

Contract: :mod:`.tables` reads every supported format (CSV, TSV, XLSX, JSONL, Parquet, Arrow, Hugging Face
datasets) whole or in chunks, checks columns and builds the shipped BBC News sample; :mod:`.corpora` builds more labeled sets from
packaged corpora (VADER sentiment, a skewed binary BBC set); :mod:`.taxonomies` builds real large, hierarchical and multi-label sets (ICD-10-CM, the HPO);
:mod:`.writers` appends
chunks to an output so a killed run leaves whole rows in input order. Nothing here knows about labeling.
"""
