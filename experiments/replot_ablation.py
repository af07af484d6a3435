"""Redraw an ablation figure from its table (an ``ablation*.csv`` the report wrote) when the
sweep's job folders are gone, with the chance level of the test split the train-config
overrides name (computed exactly, the synthetic data generated if absent):

    .venv/bin/python experiments/replot_ablation.py experiments/results/ablation_cpu.csv \
        experiments/results/ablation_cpu.png --title "..." experiment=ablation_cpu
"""

from __future__ import annotations

import argparse

from harness import compose_train_config
from omegaconf import OmegaConf

from reid_attn.report import read_table, split_chance
from reid_attn.viz.ablation import ablation_figure, save_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="the report's csv")
    parser.add_argument("out", help="the png to write")
    parser.add_argument("--title", required=True)
    parser.add_argument("overrides", nargs="*", help="train-config overrides naming the data")
    args = parser.parse_intermixed_args()
    data = OmegaConf.to_container(compose_train_config(args.overrides).data, resolve=True)
    chance = split_chance(data)
    print(f"chance level of the test split: Rank-1 {chance['rank1']:.2f}, mAP {chance['mAP']:.2f}")
    save_figure(ablation_figure(read_table(args.table), args.title, chance), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
