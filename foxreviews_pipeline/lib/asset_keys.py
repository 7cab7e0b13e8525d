"""Every asset's key, named once: the domains refer to each other's assets through these
(a dependency, a check's asset, a job's selection, a table's reader), never by a string of
their own."""

# reference
NAF_NOMENCLATURE = "naf_nomenclature"
TRADE_TAXONOMY = "trade_taxonomy"
VILLES = "villes"
# sirene
ETABLISSEMENTS_RAW = "etablissements_raw"
SIRENE_STOCK = "sirene_stock"
# directory
ENTREPRISES = "entreprises"
PRO_LOCALISATIONS = "pro_localisations"
STOCK_ENTREPRISES = "stock_entreprises"
STOCK_PRO_LOCALISATIONS = "stock_pro_localisations"
STOCK_BULK_LOAD = "stock_bulk_load"
VILLE_STATS = "ville_stats"
# uploads
UPLOADED_FILES = "uploaded_files"
# reports
COVERAGE_REPORT = "coverage_report"
