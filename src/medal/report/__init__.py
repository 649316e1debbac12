"""Reports drawn from the files the stages wrote: the experiment's page (`medal report -c CFG`, report.experiment)
and the blend's (`medal report --blend NAME`, report.blend), both rendered by medal.core.report's one Document.
A layer below the stages (the blend stage builds its report.md with report.blend) and above images and core."""
