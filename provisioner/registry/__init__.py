"""The inventory: loading and validation, the YAML source, the models, CSV/XLSX import and
export, and `init` for a new regency."""
