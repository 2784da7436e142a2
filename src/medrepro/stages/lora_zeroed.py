"""Stage lora_zeroed: pre-adaptation's runs scored with their LoRA up-projections zeroed (experiment mechanisms;
path: medrepro.layout.lora_zeroed(dataset, ei.adapter))."""

from __future__ import annotations

from medrepro.ei.peft import predict_lora_zeroed
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    run_stage("lora_zeroed", add, lambda args, cfg: predict_lora_zeroed(cfg, args.dataset))


if __name__ == "__main__":
    main()
