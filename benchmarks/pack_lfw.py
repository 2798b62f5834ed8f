"""Packs LFW small enough to travel to a machine that only small files reach (a lent GPU).

    python benchmarks/pack_lfw.py --data_dir=../shared/data --output_dir=.gpu_lfw [--config=configs/lfw.py]

Writes OUTPUT_DIR/lfw/lfw-packed.tgz (every photo already cropped and resized as the config's
preprocessing does, re-encoded as JPEG: 37 MB for configs/lfw.py's 105x105 grayscale against 109 MB
for the deep-funneled archive), its manifest, and the six protocol files. A run with the same config and
--config.data_dir=OUTPUT_DIR trains on it; a config with another crop, size or channel count is
refused with one line. JPEG re-encoding at --quality changes pixels slightly: results from a packed
archive say so in their `source`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The tool's flags; defined only when run as a command."""
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", str(REPO / "configs" / "lfw.py"), "LFW config whose preprocessing to pack.")
    flags.DEFINE_string("data_dir", None, "Folder holding lfw/ with the original archive and the protocol files.")
    flags.DEFINE_string("output_dir", None, "Where lfw/lfw-packed.tgz and the protocol files go.")
    flags.DEFINE_integer("quality", 90, "JPEG quality of the packed photos.")


def main(argv):
    """Packs the archive and copies the protocol files."""
    del argv
    from siamese_jax.config_files import upgrade_config
    from siamese_jax.data import lfw
    from siamese_jax.errors import UserError

    if not FLAGS.data_dir or not FLAGS.output_dir:
        sys.exit("error: --data_dir=DIR and --output_dir=DIR are both required")
    try:
        source = lfw.locate_archive(FLAGS.data_dir)
        if source.name == lfw.PACKED_ARCHIVE:
            raise UserError(f"{source} is packed already: give the folder of the original archive")
        protocol = [lfw.locate_protocol(FLAGS.data_dir, name) for name in (*lfw.PAIR_FILES, *lfw.PEOPLE_FILES)]
        folder = Path(FLAGS.output_dir) / "lfw"
        archive = lfw.pack_archive(source, lfw.preprocessing(upgrade_config(FLAGS.config)), folder, FLAGS.quality)
    except UserError as error:
        sys.exit(f"error: {error}")
    for path in protocol:
        shutil.copyfile(path, folder / path.name)
    print(f"{archive}: {archive.stat().st_size / 1e6:.1f} MB, packed from {source} "
          f"(with {lfw.PACKED_MANIFEST} and {len(protocol)} protocol files)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
