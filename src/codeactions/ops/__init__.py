"""Operations: health, metrics, logging and the API documentation page."""
