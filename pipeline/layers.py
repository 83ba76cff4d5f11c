"""The layers of the package, from the ground up, and which layer a module belongs to.

A module may import from its own layer and from the layers below it, never from above;
``tests/test_layers.py`` walks every module's imports and fails on an upward import or an
import circle. Reading the list top-down is reading the data flow::

    ground      errors, settings, progress, fileio, options, context, layers
    data        datasets: sources, samples, splits, decoding, the reader
    bases       pretrained convolutional bases and their preprocessing
    cache       the HDF5 feature set: its record, writer, keys and catalog
    engines     what feeds the writer: the local engine (and, optionally, Ray)
    extract     stage 1: plan an extraction and feed batches to the writer
    heads       stage 2: heads fitted on cached features, chosen on validation
    runs        run folders: the run record, the leaderboard, plots
    report      the HTML report over the run folders (index and one page per run)
    finetune    stage 3: base + head end to end; predict; export
    experiment  a whole experiment from a TOML file
    cli         the typer command line over all of the above
"""

from __future__ import annotations

#: Layer names from the ground up; each maps to the top-level modules/packages it holds.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("errors", "settings", "progress", "fileio", "options", "context", "layers")),
    ("data", ("data",)),
    ("bases", ("bases",)),
    ("cache", ("cache",)),
    ("engines", ("engines",)),
    ("extract", ("extract",)),
    ("heads", ("heads",)),
    ("runs", ("runs",)),
    # Reads run folders (and the caches they name); the fine-tune recorder refreshes it.
    ("report", ("report",)),
    ("finetune", ("finetune",)),
    ("experiment", ("experiment",)),
    ("cli", ("cli", "__main__")),
)

_RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}


def layer_of(module: str) -> int | None:
    """The rank of a ``pipeline.*`` module's layer (0 = ground); None for ``pipeline`` itself
    or a module outside the package."""
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    return _RANK.get(parts[1])


def layer_name(rank: int) -> str:
    return LAYERS[rank][0]
