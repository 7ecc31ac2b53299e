"""The string columns of the extraction frames, built in Arrow when pandas stores strings there.

pandas 3 stores strings in Arrow (its ``str`` dtype): converting a numpy array of strings costs
one Python object per row (the default ``"0", "1", ...`` ids of 60,000 rows: ~28 ms, a quarter
of an MLP's forward pass). Arrow's own cast writes the same strings in C (~2 ms), and a
constant split column is a one-entry dictionary cast out (~0.7 ms instead of ~8 ms). The
values and the dtype are exactly what pandas builds from the numpy arrays; with object-dtype
strings (pandas 2), the numpy arrays are used as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _arrow_str_dtype():
    """pandas' dtype for an array of strings when it is Arrow-backed, else None (read each
    time: ``future.infer_string`` is an option a user may change)."""
    dtype = pd.Index(np.array(["0"])).dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return dtype
    return None


def default_ids(n: int) -> pd.Index:
    """The ``sample_id`` index ``"0", "1", ..., str(n - 1)``."""
    dtype = _arrow_str_dtype() if n else None  # pandas keeps an empty one as object
    if dtype is None:
        return pd.Index(np.arange(n).astype(str), name="sample_id")
    import pyarrow as pa
    import pyarrow.compute as pc

    strings = pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())
    return pd.Index(pd.array(strings, dtype=dtype), name="sample_id")


def constant_strings(value: str, n: int):
    """``n`` copies of ``value`` as a column (an Arrow string array or a numpy array)."""
    dtype = _arrow_str_dtype() if n else None
    if dtype is None:
        return np.full(n, value)
    import pyarrow as pa

    codes = pa.array(np.zeros(n, dtype=np.int32))
    strings = pa.DictionaryArray.from_arrays(codes, pa.array([value], pa.string()))
    return pd.array(strings.cast(pa.string()), dtype=dtype)
