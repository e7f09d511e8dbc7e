"""The reference implementation's pickles, read and written."""
