"""Names shared by the operator, the images and the dev tools (DESIGN §5.4, §5.5), with no dependency but
pydantic: the segment runtime, the gateway and the discovery agent install it without the solver."""
