# Detection rules: the prepared volumes, and the evaluation of each model's first fold on
# the test scans.


rule prepare_detection:
    input:
        data="results/{cs}/data",
        geometry="results/{cs}/qc/geometry.json",
    output:
        volumes=directory("results/{cs}/detection/volumes"),
        provenance="results/{cs}/detection/volumes_provenance.json",
    log:
        "logs/{cs}/prepare_detection.log",
    benchmark:
        "results/{cs}/benchmarks/prepare_detection.tsv"
    wildcard_constraints:
        cs=DETECTION_CS,
    threads: rule_threads("prepare_detection")
    resources:
        **rule_resources("prepare_detection"),
    params:
        detection=lambda wc: detection_subset(wc.cs, VOLUME_KEYS),
    script:
        "../../../scripts/prepare_detection.py"


rule evaluate_detection:
    input:
        models=lambda wc: [
            f"{model_dir(wc.cs, m, f)}/model.pt" for m, f in first_runs(wc.cs)
        ],
        volumes="results/{cs}/detection/volumes",
        data="results/{cs}/data",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        candidates="results/{cs}/detection/candidates.tsv",
        metrics="results/{cs}/detection/metrics.json",
        comparison="results/{cs}/detection/comparison.tsv",
        provenance="results/{cs}/detection/provenance.json",
        froc=report(
            "results/{cs}/figures/froc.png",
            caption="../../report/froc.rst",
            category="{cs}",
            labels={"figure": "FROC curves with CIs"},
        ),
        overlays=report(
            "results/{cs}/figures/detection_overlays.png",
            caption="../../report/detection_overlays.rst",
            category="{cs}",
            labels={"figure": "detections on test scans"},
        ),
        by_size=report(
            "results/{cs}/figures/sensitivity_by_size.png",
            caption="../../report/sensitivity_by_size.rst",
            category="{cs}",
            labels={"figure": "sensitivity by nodule size"},
        ),
        comparison_figure=report(
            "results/{cs}/figures/detection_comparison.png",
            caption="../../report/detection_comparison.rst",
            category="{cs}",
            labels={"figure": "detectors compared"},
        ),
        froc_summary=summary_of("results/{cs}/figures/froc.png"),
        overlays_summary=summary_of("results/{cs}/figures/detection_overlays.png"),
        by_size_summary=summary_of("results/{cs}/figures/sensitivity_by_size.png"),
        comparison_summary=summary_of("results/{cs}/figures/detection_comparison.png"),
    log:
        "logs/{cs}/evaluate_detection.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate_detection.tsv"
    wildcard_constraints:
        cs=DETECTION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        models=lambda wc: {m: model_config(wc.cs, m) for m, _ in first_runs(wc.cs)},
        detection=lambda wc: detection_settings(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/evaluate_detection.py"
