"""Reproducing published results: every experiment, its runs, its result card.

    cnnjax reproduce --list
    cnnjax reproduce --filter mnist1d [--seeds 3] [--smoke]

An experiment is a file under `experiments/` that names the figure it aims
at or the settings it compares; its id is its path there ('cifar10/resnet20').
Reproducing it is a sweep (cnnjax/sweep/) over its `reproduce.average_over`
and `reproduce.compare` settings and its seeds; finished runs are never
trained again. The outcome is a card: the published figure beside the
measured one, stored beside RESULTS.md and rendered into it.

  catalogue.py   which files are experiments (and variants): `discover`, `select`
  planning.py    an experiment's config, grid and seeds: `plan`
  execution.py   `reproduce_one`: the sweep, the transfer source, the analysis
  analyses.py    figures computed from finished runs (`reproduce.analysis`)
  cards.py       the card of a reproduction; storing and loading cards
  rendering.py   cards as markdown: RESULTS.md and the terminal's tables
"""

from cnnjax.reproduce.cards import (CARD_FILE, build_card,  # noqa: F401
                                    card_file_name, load_cards, pool,
                                    refresh_stored_cards, rerun_command,
                                    store_card, wall_total, write_card)
from cnnjax.reproduce.catalogue import (EXPERIMENTS, Experiment,  # noqa: F401
                                        discover, find, select)
from cnnjax.reproduce.execution import reproduce_one  # noqa: F401
from cnnjax.reproduce.planning import Plan, plan  # noqa: F401
from cnnjax.reproduce.rendering import (BEGIN_MARKER, END_MARKER,  # noqa: F401
                                        INTRO, format_duration,
                                        format_measured, format_published,
                                        format_value, metric_label, plan_line,
                                        render_card, render_results,
                                        results_dirs, summary_line, table,
                                        update_results)
from cnnjax.reproduce import analyses_sharing  # noqa: F401, E402
from cnnjax.reproduce import analyses_octconv  # noqa: F401, E402
from cnnjax.reproduce import analyses_init  # noqa: F401, E402
from cnnjax.reproduce import analyses_features  # noqa: F401, E402
