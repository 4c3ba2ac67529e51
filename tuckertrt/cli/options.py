"""Options shared by several commands, so each is declared once."""
from __future__ import annotations

import click

from tuckertrt.errors import UsageError
from tuckertrt.cli.preflight import finite
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP


def _check_df(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise UsageError(f"--df must be in (0, 1], got {value}")
    return value


def _check_min_rank(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        rank = int(value)
    except ValueError:
        raise UsageError(f"--min-rank must be a positive integer, got {value!r}") from None
    if rank < 1:
        raise UsageError(f"--min-rank must be a positive integer, got {value}")
    return rank


model_argument = click.argument("model", metavar="MODEL")
df_option = click.option("--df", type=float, default=None, callback=_check_df,
                         help="Decomposition factor: fraction of channels kept as Tucker rank, in (0, 1].")
min_rank_option = click.option("--min-rank", default="8", callback=_check_min_rank, show_default=True,
                               help="Lower bound of every rank.")
policy_option = click.option("--policy", type=click.Choice(["default", "paper"]), default="default",
                             show_default=True,
                             help="paper: decompose every conv as the paper did; default: skip layers where it "
                                  "does not reduce parameters.")
ranks_option = click.option("--ranks", "ranks_file", default=None, metavar="FILE|energy:F|vbmf|auto",
                            help="Per-layer ranks instead of --df: a JSON file {layer: [r_in, r_out] | 'keep'}, "
                                 "energy:F (keep F of each kernel's channel energy, e.g. energy:0.9), vbmf, or "
                                 "auto (decompose, build: chosen for quality within --macs F or --speedup S).")
tile_step_option = click.option("--tile-step", type=float, default=DEFAULT_TILE_STEP, callback=finite(0.05, 1.0),
                                 show_default=True, help="Sliding-window step as a fraction of the patch.")
def _expect_sha256(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    if value:
        from tuckertrt.models.totalseg import expect_sha256

        expect_sha256(value)


def download_option(command):
    """--download, and --sha256 to check what it downloads."""
    command = click.option("--sha256", multiple=True, expose_value=False, callback=_expect_sha256,
                           metavar="[ID=]HEX", help="Expected sha256 of the downloaded weights archive "
                                                    "(ID=HEX per TotalSegmentator dataset id; repeatable).")(command)
    return click.option("--download", is_flag=True, help="Download missing TotalSegmentator weights.")(command)


def decomposition_options(command):
    """--df, --min-rank, --policy and --ranks: how a command decomposes MODEL."""
    for option in (ranks_option, policy_option, min_rank_option, df_option):
        command = option(command)
    return command


def decomposed_as_asked(model, df: float | None, min_rank: int, policy: str, ranks_file: str | None):
    """``model`` decomposed as the decomposition options say, or ``model`` itself when they ask for nothing."""
    from tuckertrt.decomposition import decompose
    from tuckertrt.decomposition.ranks import rank_spec

    ranks = rank_spec(ranks_file, model.network, min_rank)
    if df is None and ranks is None:
        return model
    return decompose(model, df=df, min_rank=min_rank, policy=policy, ranks=ranks)


def gate_options(f):
    """``--min-dice`` / ``--min-class-dice``: the parity gate (``tuckertrt.parity.ParityGate``)."""
    from tuckertrt.parity.gate import DEFAULT_GATE

    f = click.option("--min-class-dice", type=float, default=DEFAULT_GATE.min_class_dice, show_default=True,
                     help="Gate: every class's Dice vs the uncompressed model.")(f)
    return click.option("--min-dice", type=float, default=DEFAULT_GATE.min_dice, show_default=True,
                        help="Gate: mean Dice vs the uncompressed model.")(f)
