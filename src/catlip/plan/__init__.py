"""`catlip plan`: a cost model of CatLIP vs CLIP pre-training on a cluster (docs/scaling.md); torch-free."""
