"""Drawing detections and ground truth (headless, OpenCV)."""

from detcli.visualization.draw import (
    class_color,
    denormalize,
    draw_detections,
    draw_ground_truth,
    output_name,
    save_image,
)

__all__ = ["class_color", "denormalize", "draw_detections", "draw_ground_truth", "output_name", "save_image"]
