"""The image-file datasets' shared path (PCam, ISIC, BreakHis): 2D decoding
under the limits, and the dump of decoded images with their manifest."""
