"""AgeMoE: several age estimators fused without retraining them (per-expert bias correction, then
a softmax gate over the corrected ages), judged overall and per age group."""
