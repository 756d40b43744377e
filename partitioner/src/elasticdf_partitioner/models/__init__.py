"""Built-in model graphs (the zoo's builders): ResNet-50 w1a2, MobileNetV1 w4a4, CNV w1a1."""
