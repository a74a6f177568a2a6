"""Make OpenGME's built-in HRTF, ``src/opengme/data/kemar.sofa``, from the MIT KEMAR measurements.

Source: the KEMAR "normal pinna" head-related impulse responses measured by Bill Gardner and Keith Martin
at the MIT Media Lab in 1994 (MIT Media Lab Perceptual Computing Technical Report #280), public data, as
carried by the ``slab`` package on PyPI (``slab/data/mit_kemar_normal_pinna.bz2``, a pickled
``slab.HRTF``: 710 directions, 512 taps, 44.1 kHz). The pickle is read with a restricted unpickler that
maps slab's classes to plain objects, so slab itself (and its plotting stack) need not be importable.

What is kept, to stay small: every direction on the elevations -40, -20, 0, 20, 40, 60, 80 and 90
degrees (377 of 710), 128 taps from sample 16 (before the earliest onset at 25, so interaural delays
are kept; about 99.5 % of the energy), a 16-tap half-Hann fade-out, float32, zlib-compressed.
The file is written and checked with ``sofar`` (SimpleFreeFieldHRIR, AES69).

    pip install slab sofar   # or: pip download slab --no-deps and pass --source
    python scripts/make_kemar_sofa.py [--source path/to/mit_kemar_normal_pinna.bz2]
"""
from __future__ import annotations

import argparse
import bz2
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import sofar

ELEVATIONS = (-40, -20, 0, 20, 40, 60, 80, 90)
FIRST_TAP, TAPS, FADE = 16, 128, 16
OUT = Path(__file__).resolve().parents[1] / "src" / "opengme" / "data" / "kemar.sofa"


class _Plain:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _SlabFree(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "slab":
            return type(name, (_Plain,), {})
        if module.split(".")[0] not in ("numpy", "builtins", "collections", "copyreg"):
            raise pickle.UnpicklingError(f"unexpected {module}.{name} in the KEMAR pickle")
        return super().find_class(module, name)


def default_source() -> Path:
    spec = importlib.util.find_spec("slab")
    if spec is None or spec.origin is None:
        raise SystemExit("install slab (pip install slab) or pass --source")
    return Path(spec.origin).parent / "data" / "mit_kemar_normal_pinna.bz2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with bz2.open(args.source or default_source()) as f:
        hrtf = _SlabFree(f).load()
    sources = np.asarray(hrtf.sources, dtype=float)  # azimuth (counter-clockwise from front), elevation, metres
    ir = np.stack([np.asarray(flt.data) for flt in hrtf.data]).transpose(0, 2, 1)  # (M, ears L/R, N)
    keep = np.isin(sources[:, 1], ELEVATIONS)
    ir = ir[keep, :, FIRST_TAP:FIRST_TAP + TAPS].copy()
    ir[..., -FADE:] *= np.hanning(2 * FADE)[FADE:]
    sofa = sofar.Sofa("SimpleFreeFieldHRIR")
    sofa.GLOBAL_Title = "MIT KEMAR normal pinna (Gardner & Martin 1994), reduced for OpenGME"
    sofa.GLOBAL_Organization = "MIT Media Lab (measurements); OpenGME (reduction)"
    sofa.GLOBAL_AuthorContact = "see README"
    sofa.GLOBAL_License = "Public data of the MIT Media Lab KEMAR measurements; credit Gardner & Martin 1994"
    sofa.GLOBAL_References = "W. G. Gardner, K. D. Martin, HRTF measurements of a KEMAR, MIT Media Lab TR #280, 1994"
    sofa.GLOBAL_Comment = f"elevations {ELEVATIONS}, taps {FIRST_TAP}..{FIRST_TAP + TAPS} of 512, from slab's copy"
    sofa.GLOBAL_DatabaseName = "MIT KEMAR"
    sofa.GLOBAL_ListenerShortName = "KEMAR"
    sofa.Data_IR = ir.astype(np.float32)
    sofa.Data_SamplingRate = float(hrtf.samplerate)
    sofa.Data_Delay = np.zeros((1, 2))
    sofa.SourcePosition = sources[keep]
    sofa.SourcePosition_Type = "spherical"
    sofa.SourcePosition_Units = "degree, degree, metre"
    sofa.verify()
    sofar.write_sofa(str(args.out), sofa, compression=9)
    print(f"{args.out}: {keep.sum()} directions x 2 ears x {TAPS} taps at {hrtf.samplerate:g} Hz, "
          f"{args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
