"""The realtime desktop GUI of ``gui.py`` (FreeSimpleGUI on tkinter).

The window only collects settings and shows figures; conversion is
:mod:`inference.realtime` and the sound card is :mod:`inference.audio_io`. Nothing is imported
or built at import time.
"""
