"""`qwenocr eval`: OCR output scored against ground truth (CER/WER and text checks)."""
