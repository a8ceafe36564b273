"""Flow 4, deployment: a vidcls model written for another runtime, checked against torch before it is kept.

    onnx    `vidcls export`: ONNX (fp32 or int8) with the model's card inside
"""
