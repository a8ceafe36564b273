"""Flow 1, second half: videos and a ready model become labels, at any scale.

    options    the typed, validated options of a run (predict, evaluate, timeline, benchmark)
    batcher    packing views of many owners (videos or windows) into forward passes, with a
               failure boundary per owner
    engine     the DataLoader pipeline: decode in workers, batch, score, in input order
    predict    Prediction, classify, `vidcls.predict` and the plan of a run (recipe, settings, cost)
    timeline   labels over time for long videos (windows, smoothing, segments)
    results    streaming output files (.jsonl, .json, .csv), resume, merge
    metrics    evaluate's accuracy, per-class scores and confusion matrix
"""
