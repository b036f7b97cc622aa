"""ONNX export of SoVITS models (4.1 ``onnx_export.py`` + ``onnxexport/``): the inference graph
(:mod:`onnxexport.sovits`) and the export job, MoeVS descriptor and onnxruntime check
(:mod:`onnxexport.export`)."""
