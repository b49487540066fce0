"""Operations: health, metrics, retention cleaners."""
