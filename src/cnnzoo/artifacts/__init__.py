"""What cnnzoo writes to disk and reads back: checkpoints, export folders, and the one resolver of sources.

Above the model zoo (a checkpoint names a model to rebuild), below the engine and inference (which train,
evaluate and predict from what is read here).
"""
