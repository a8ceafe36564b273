"""Flow 4, deployment: a vidcls model written for another runtime, checked against torch before it is kept.

    formats   `vidcls export`'s entry point: the format asked for (or named by --out), its options
    common    what every format shares: the torch model and its card at the exported shape, the report
    parity    the gate every file passes: fp32 within 1e-4 of torch, int8 top-1 agreement on sample clips
    onnx      ONNX (fp32, or int8 by ONNX Runtime's dynamic quantisation) with the card in its metadata
    openvino  an OpenVINO IR (fp32, or int8 by NNCF calibrated on clips) with the card in its rt_info
"""
