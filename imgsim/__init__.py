"""The plumbing behind image-similarity-vector-db.ipynb, one module per step the data flows through.

    settings    the notebook's parameters, checked once at the top
    files       finding the images, their labels, a spread-out sample, the sample download
    reading     one file in, 224 x 224 pixels out, or the reason it was skipped
    model       the ResNet, its weights and its preprocessing
    embedding   batches of files in, unit-length vectors out, read by a pool of threads
    store       the Qdrant connection, collection checks, and incremental sync with the folder
    search      filters and example choices for the notebook's queries
    duplicates  centred all-pairs scores, near-duplicate groups, the planted-copy check
    metrics     leave-one-out precision@k and mAP@k
    plots       every picture the notebook shows
    report      timings and the JSON run report
    panel       the search panel: upload or pick a query, filter it by label, refine it (more / less like this)

The notebook makes the calls that carry the lesson itself (the head swap, `create_collection`,
`upsert`, `query_points`, the recommend query, the payload filter, the centring); these modules do
the rest, and the tests and the benchmark import them.
"""
