"""Flow 1, first half: a video file becomes the tensors a model reads.

    sampling    which frame indices a clip takes (segment or dense), pure arithmetic
    container   opening files and URLs with PyAV, the frame clock, rotation, one-line errors
    probe       what ffmpeg makes of an input: the refusals every video shares, stdin judged from its head
    decode      probing and decoding only the frames wanted, fitted to the model as decoded
    transforms  resize, crop and normalise frames into views
    inputs      what the user named (files, folders, URLs, stdin, @LIST) as a list of videos
    encode      writing frames as a video file (sample clips, annotated videos)
    synthetic   moving shapes whose class is the direction of motion (demos, tests, distillation)
"""
