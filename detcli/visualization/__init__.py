"""Drawing detections and ground truth (headless, OpenCV)."""

from detcli.visualization.draw import class_color, draw_detections, draw_ground_truth

__all__ = ["class_color", "draw_detections", "draw_ground_truth"]
