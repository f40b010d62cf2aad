"""Register a training run's best model and promote it only when the gate says so (the
``register`` entry point), or roll the champion back (``rollback``) and redeploy it.

Idempotent and crash-safe; the decision is tags on the version and the model card its
description. How: ``steps.registry.registration`` and ``steps.registry.versions``.
"""

from __future__ import annotations

import sys

from steps.core import config
from steps.deployment import images, rollout, server
from steps.deployment.model_image import DeployError
from steps.evaluation import gate
from steps.registry.candidates import RegistrationError
from steps.registry.registration import register
from steps.registry.versions import rollback

HELP = {
    "train_run_id": "training run whose family-best models compete (empty: the newest one)",
    "eval_data_uri": (
        "labelled raw-format CSV(s) the gate judges on "
        "(empty: initial_test of the data store the training run read)"
    ),
    "margin": "non-inferiority margin on the ROC-AUC difference",
    "deployment_cost": "ROC-AUC gain over the champion a promotion must show (0: none)",
    "auc_floor": "lowest ROC-AUC a champion may have",
    "max_subgroup_recall_gap": "largest recall gap between age/sex/race subgroups",
    "n_bootstrap": "paired bootstrap resamples (at least 1,000)",
    "seed": "random seed of the bootstrap",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.register [--train-run-id ID] [--eval-data-uri URI] ...`` or
    ``python -m steps.register --rollback``."""
    parser = config.entry_point_parser("register", __doc__, HELP)
    parser.add_argument(
        "--rollback", action="store_true", help="point champion back at previous-champion"
    )
    parser.add_argument(
        "--deploy-target",
        choices=("k8s", "docker", "local", "none"),
        default=config.project_defaults("rollback")["deploy_target"],
        help="with --rollback: where the restored champion is redeployed (none: nowhere)",
    )
    args = parser.parse_args(argv)
    config.configure_logging()
    try:
        if args.rollback:
            result = rollback()
            print(result.verdict())
            return _redeploy(result.champion_version, args.deploy_target)
        policy = gate.GatePolicy(
            margin=args.margin,
            deployment_cost=args.deployment_cost,
            auc_floor=args.auc_floor,
            max_subgroup_recall_gap=args.max_subgroup_recall_gap,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
        )
        decision = register(args.train_run_id, args.eval_data_uri, policy)
    except (RegistrationError, gate.GateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(decision.verdict())
    return 0


def _redeploy(version: str, target: str) -> int:
    """Deploy champion ``version`` to ``target`` after a rollback; 0, or 1 with an error line."""
    if target == "none":
        return 0
    try:
        deployed = rollout.deploy(target=target, model_uri=config.model_version_uri(version))
    except (DeployError, images.ImageError, server.ServingError) as error:
        print(
            f"error: rolled back to v{version}, but its redeploy failed: {error}", file=sys.stderr
        )
        return 1
    print(f"redeployed v{version} ({target}): {deployed.image or deployed.url or 'served'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
