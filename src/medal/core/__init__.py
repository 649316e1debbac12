"""core: what every stage shares, torch-free. The config, the file layout between stages, atomic writes,
logging, metrics, the tables, prediction and submission files, plots and reports. Imports nothing else of medal."""
from medal.core.exports import lazy_exports

_HOMES = {
    "Config": "config", "ConfigError": "config", "load_config": "config", "config_snapshot": "config",
    "atomic_path": "io", "read_csv": "io", "write_bytes": "io", "write_csv": "io", "write_json": "io",
    "write_text": "io", "remove_stale_temporaries": "io",
    "get_logger": "log", "setup_logging": "log", "progress": "log",
    "METRICS": "metrics", "score": "metrics", "higher_is_better": "metrics", "is_better": "metrics",
    "prediction_frame": "predictions", "read_predictions": "predictions", "rank_scale": "predictions",
    "check_submission": "submission", "make_submission": "submission", "score_submission": "submission",
    "class_index": "tables", "class_names": "tables", "fold_count": "tables", "label_codes": "tables", "read_folds": "tables",
    "read_sample_submission": "tables", "read_train_table": "tables", "split_labels": "tables",
    "connected_groups": "graph", "correlation_heatmap": "plots", "Document": "report",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
