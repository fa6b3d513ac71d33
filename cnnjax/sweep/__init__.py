"""Ablations: one experiment trained over a grid of config values and seeds.

    from cnnjax import config as config_lib, sweep
    summary = sweep.run(config_lib.load_config('experiments/mnist1d/cnn.py'),
                        {'optimizer.learning_rate': [0.01, 0.003],
                         'model.name': ['mnist1d_cnn', 'mnist1d_mlp']},
                        seeds=(0, 1, 2), workdir='runs/sweeps/lr_model')
    print(summary.to_markdown())

or `cnnjax sweep --config FILE --grid KEY=V1,V2 --seeds 3`. Every (setting,
seed) pair is an ordinary run in its own workdir,
`<workdir>/<setting slug>/seed_<s>`, so a sweep stopped part-way resumes where
it stopped, finished runs are not trained again, and each run can be inspected
with the usual tools (`cnnjax eval`, its curves.png). The sweep writes
`sweep.json` (what it is); `summary.csv` (per setting: mean, sample std,
min, max and the 95% t-interval of every final metric over the seeds);
`differences.csv` (every setting minus the first, paired by seed: the mean
difference, its 95% t-interval and the paired t-test's p-value);
`summary.md` (both tables); `summary.json` (both, and every run's final
metrics); `summary.png` (the means with their intervals, the seeds as dots).

  grid.py        parsing and checking the grid; the settings' directory names
  execution.py   `run`: finding finished runs, training the others
  trials.py      a trial (a run, or a setting's seeds vmapped) and `run_trial`
  executors.py   where trials train: this process, or N local workers
  worker.py      a local worker process
  remote.py      Ray tasks and SLURM jobs (submitit), optional extras
  summary.py     `Summary`: statistics over seeds; CSV, markdown, JSON and PNG
  stats.py       t-intervals, seed-paired differences and claim verdicts
"""

from cnnjax.sweep.execution import SWEEP_FILE, run  # noqa: F401
from cnnjax.sweep.executors import (Executor, LocalExecutor,  # noqa: F401
                                    SerialExecutor)
from cnnjax.sweep.remote import RayExecutor, SlurmExecutor  # noqa: F401
from cnnjax.sweep.grid import (canonical, jsonable, parse_grid_flag,  # noqa: F401
                               setting_slugs)
from cnnjax.sweep.stats import (interval, paired_difference,  # noqa: F401
                                verdict)
from cnnjax.sweep.summary import (Summary, plot_metric,  # noqa: F401
                                  summarize_settings, write_summary)
