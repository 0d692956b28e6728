"""egmt_ros.entities"""
