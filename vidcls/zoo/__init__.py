"""Flow 2: a REF (zoo name, hf://, model directory, .onnx file, OpenVINO IR) becomes a ready model.

    modeldir   model directories: config.json (the ModelCard) + model.safetensors, read and written
    labels     packaged label sets (Kinetics-400, ...)
    cache      vidcls's cache, digests and verified files
    bounded    downloads bounded as they stream (the progress-bar hook both hub and web use)
    hub        the Hugging Face Hub: downloads, offline mode, pins
    web        weights at a plain URL: resumable download, checksums
    convert    foreign checkpoints (transformers, timm, the X-ViT and VidTr authors') to vidcls
    cards      the one card reader of a model directory in either format
    entries    reading and validating zoo files (models.yaml, VIDCLS_ZOO)
    catalog    the zoo's entries by name, their cards and weight sources
    runtime    what the exported-model runtimes share: the torch-shaped module, REF lookup, missing extras
    onnx       an exported .onnx model on ONNX Runtime, called like the torch module
    openvino   an OpenVINO IR (card in its rt_info) on OpenVINO, called like the torch module
    fetch      downloading and verifying an entry's or an hf:// REF's weights
    resolve    REF -> card + weights -> LoadedModel (`load_model`)
    openvino_convert  a torch model converted to OpenVINO once, cached by weights, card and shape
"""
