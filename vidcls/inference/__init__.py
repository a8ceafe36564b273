"""Flow 1, second half: videos and a ready model become labels (or vectors), at any scale.

    options    the typed, validated options of a run (predict, evaluate, embed, timeline, benchmark)
    batcher    packing views of many owners (videos or windows) into forward passes, with a
               failure boundary per owner
    engine     the DataLoader pipeline: decode in workers, batch, score, in input order
    predict    Prediction, classify, `vidcls.predict` and the plan of a run (recipe, settings, cost)
    embed      Embedding, the pre-logits Head, embed_videos (the engine, or windows over time)
    vectors    embed's output files: .jsonl/.json records, or .npy rows + index; resume, merge
    timeline   labels over time for long videos (windows, smoothing, segments)
    results    streaming output files (.jsonl, .json, .csv), resume, merge
    metrics    evaluate's accuracy, per-class scores and confusion matrix
"""
