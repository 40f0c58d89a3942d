"""Process plumbing with no batchemo knowledge: TensorFlow/Keras import settings (tf), silencing
native libraries' stderr (quiet), JSON log lines (jsonlog). Imports nothing from batchemo."""
